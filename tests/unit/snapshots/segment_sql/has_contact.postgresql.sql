-- {"channel": "phone", "type": "has_contact"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.phone IS NOT NULL
