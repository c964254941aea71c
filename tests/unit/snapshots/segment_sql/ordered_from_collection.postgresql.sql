-- {"collection": "dog-food", "type": "ordered_from_collection"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM orders JOIN order_lines ON order_lines.order_pk = orders.id 
WHERE orders.customer_id = customers.id AND orders.status != %(status_1)s::VARCHAR AND (order_lines.category = %(category_1)s::VARCHAR OR order_lines.product_id IN (SELECT products.product_id 
FROM products 
WHERE (products.collections @> %(param_1)s::JSONB)))))
