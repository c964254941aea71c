-- {"period": {"amount": 3, "type": "last", "unit": "months"}, "type": "placed_order"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM orders 
WHERE orders.customer_id = customers.id AND orders.status != ? AND orders.placed_at >= ? AND orders.placed_at < ?))
