-- {"type": "orders_matching", "where": [{"field": "coupon", "op": "not_exists"}]}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM orders 
WHERE orders.customer_id = customers.id AND orders.status != ? AND NOT (EXISTS (SELECT * 
FROM (SELECT anon_2.value AS value 
FROM json_each(orders.coupons) AS anon_2 
WHERE anon_2.type = ?) AS anon_1 
WHERE 1 = 1))))
