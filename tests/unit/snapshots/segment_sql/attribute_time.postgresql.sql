-- {"field": "created_at", "op": "gt", "type": "attribute", "value": "2026-01-15"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.created_at IS NOT NULL AND customers.created_at >= %(created_at_1)s::TIMESTAMP WITH TIME ZONE
