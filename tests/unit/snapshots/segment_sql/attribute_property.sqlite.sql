-- {"op": "in", "property": "plan", "type": "attribute", "value": ["gold", "silver"]}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND coalesce(json_type(customers.properties, ?), ?) = ? AND json_extract(customers.properties, ?) IN (__[POSTCOMPILE_json_extract_1])
