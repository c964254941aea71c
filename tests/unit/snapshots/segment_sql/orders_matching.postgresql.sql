-- {"count": {"op": "gte", "value": 2}, "period": {"amount": 1, "type": "last", "unit": "years"}, "type": "orders_matching", "where": [{"field": "total", "op": "gt", "value": 100}, {"field": "coupon", "op": "eq", "value": "SPRING"}, {"field": "shipping_country", "op": "in", "value": ["DE", "AT"]}]}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (SELECT count(*) AS count_1 
FROM orders 
WHERE orders.customer_id = customers.id AND orders.status != %(status_1)s::VARCHAR AND orders.placed_at >= %(placed_at_1)s::TIMESTAMP WITH TIME ZONE AND orders.placed_at < %(placed_at_2)s::TIMESTAMP WITH TIME ZONE AND orders.total IS NOT NULL AND orders.total > %(param_1)s AND (EXISTS (SELECT * 
FROM (SELECT anon_2.value #>> %(param_2)s::TEXT[] AS value 
FROM jsonb_array_elements(orders.coupons) AS anon_2(value) 
WHERE jsonb_typeof(anon_2.value) = %(jsonb_typeof_1)s::VARCHAR) AS anon_1 
WHERE anon_1.value IN (__[POSTCOMPILE_value_1]))) AND orders.shipping_country IS NOT NULL AND orders.shipping_country IN (__[POSTCOMPILE_shipping_country_1])) >= %(param_3)s::INTEGER
