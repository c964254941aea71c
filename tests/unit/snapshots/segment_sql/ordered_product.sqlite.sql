-- {"period": {"amount": 30, "type": "last", "unit": "days"}, "product_id": "p1", "type": "ordered_product", "variant_id": "v1"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM orders JOIN order_lines ON order_lines.order_pk = orders.id 
WHERE orders.customer_id = customers.id AND orders.status != ? AND orders.placed_at >= ? AND orders.placed_at < ? AND order_lines.product_id = ? AND order_lines.variant_id = ?))
