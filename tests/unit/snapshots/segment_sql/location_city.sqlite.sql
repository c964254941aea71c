-- {"field": "city", "op": "neq", "type": "location", "value": "Paris"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND NOT (customers.city IS NOT NULL AND customers.city IN (__[POSTCOMPILE_city_1]))
