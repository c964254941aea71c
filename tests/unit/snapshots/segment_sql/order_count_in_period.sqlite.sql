-- {"compare": {"op": "gte", "value": 3}, "period": {"type": "this_month"}, "type": "order_count"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (SELECT count(*) AS count_1 
FROM orders 
WHERE orders.customer_id = customers.id AND orders.status != ? AND orders.placed_at >= ? AND orders.placed_at < ?) >= ?
