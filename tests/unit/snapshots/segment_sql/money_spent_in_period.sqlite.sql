-- {"compare": {"op": "between", "to": 200, "value": 100}, "period": {"amount": 30, "type": "last", "unit": "days"}, "type": "money_spent"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (SELECT coalesce(round(sum(orders.total - orders.refunded_total), ?), ?) AS coalesce_1 
FROM orders 
WHERE orders.customer_id = customers.id AND orders.status != ? AND orders.placed_at >= ? AND orders.placed_at < ?) BETWEEN ? AND ?
