-- {"compare": {"op": "between", "to": 200, "value": 100}, "period": {"amount": 30, "type": "last", "unit": "days"}, "type": "money_spent"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (SELECT coalesce(sum(orders.total - orders.refunded_total), %(coalesce_2)s::INTEGER) AS coalesce_1 
FROM orders 
WHERE orders.customer_id = customers.id AND orders.status != %(status_1)s::VARCHAR AND orders.placed_at >= %(placed_at_1)s::TIMESTAMP WITH TIME ZONE AND orders.placed_at < %(placed_at_2)s::TIMESTAMP WITH TIME ZONE) BETWEEN %(param_1)s AND %(param_2)s
