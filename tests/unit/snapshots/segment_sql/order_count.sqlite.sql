-- {"compare": {"op": "gte", "value": 5}, "type": "order_count"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.orders_count >= ?
