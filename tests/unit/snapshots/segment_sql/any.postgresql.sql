-- {"rules": [{"tag": "vip", "type": "tag"}, {"channel": "phone", "type": "has_contact"}], "type": "any"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND ((customers.tags @> %(param_1)s::JSONB) OR customers.phone IS NOT NULL)
