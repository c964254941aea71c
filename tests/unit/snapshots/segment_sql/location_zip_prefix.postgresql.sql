-- {"field": "zip_prefix", "type": "location", "value": "75"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.zip IS NOT NULL AND substr(lower(customers.zip), %(substr_1)s::INTEGER, %(substr_2)s::INTEGER) = %(substr_3)s::VARCHAR
