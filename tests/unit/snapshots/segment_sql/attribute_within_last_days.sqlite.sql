-- {"field": "last_seen_at", "op": "within_last_days", "type": "attribute", "value": 7}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.last_seen_at IS NOT NULL AND customers.last_seen_at >= ?
