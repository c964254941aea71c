-- {"op": "in", "property": "plan", "type": "attribute", "value": ["gold", "silver"]}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND coalesce(jsonb_typeof(customers.properties -> %(param_1)s::VARCHAR), %(coalesce_1)s::VARCHAR) = %(coalesce_2)s::VARCHAR AND (customers.properties ->> %(param_2)s::VARCHAR) IN (__[POSTCOMPILE_param_3])
