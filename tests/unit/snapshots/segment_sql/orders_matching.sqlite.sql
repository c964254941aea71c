-- {"count": {"op": "gte", "value": 2}, "period": {"amount": 1, "type": "last", "unit": "years"}, "type": "orders_matching", "where": [{"field": "total", "op": "gt", "value": 100}, {"field": "coupon", "op": "eq", "value": "SPRING"}, {"field": "shipping_country", "op": "in", "value": ["DE", "AT"]}]}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (SELECT count(*) AS count_1 
FROM orders 
WHERE orders.customer_id = customers.id AND orders.status != ? AND orders.placed_at >= ? AND orders.placed_at < ? AND orders.total IS NOT NULL AND orders.total > ? AND (EXISTS (SELECT * 
FROM (SELECT anon_2.value AS value 
FROM json_each(orders.coupons) AS anon_2 
WHERE anon_2.type = ?) AS anon_1 
WHERE anon_1.value IN (__[POSTCOMPILE_value_1]))) AND orders.shipping_country IS NOT NULL AND orders.shipping_country IN (__[POSTCOMPILE_shipping_country_1])) >= ?
