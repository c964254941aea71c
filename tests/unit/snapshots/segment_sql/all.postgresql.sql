-- {"rules": [{"tag": "vip", "type": "tag"}, {"channel": "email", "type": "has_contact"}], "type": "all"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (customers.tags @> %(param_1)s::JSONB) AND customers.email IS NOT NULL
