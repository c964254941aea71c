-- {"field": "country", "op": "in", "type": "location", "value": ["de", "AT"]}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.country IS NOT NULL AND upper(customers.country) IN (__[POSTCOMPILE_upper_1])
