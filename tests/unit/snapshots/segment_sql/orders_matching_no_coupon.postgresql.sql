-- {"type": "orders_matching", "where": [{"field": "coupon", "op": "not_exists"}]}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM orders 
WHERE orders.customer_id = customers.id AND orders.status != %(status_1)s::VARCHAR AND NOT (EXISTS (SELECT * 
FROM (SELECT anon_2.value #>> %(param_1)s::TEXT[] AS value 
FROM jsonb_array_elements(orders.coupons) AS anon_2(value) 
WHERE jsonb_typeof(anon_2.value) = %(jsonb_typeof_1)s::VARCHAR) AS anon_1 
WHERE true))))
