-- {"rule": {"tag": "vip", "type": "tag"}, "type": "not"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND NOT (customers.tags @> %(param_1)s::JSONB)
