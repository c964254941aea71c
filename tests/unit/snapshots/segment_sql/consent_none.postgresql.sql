-- {"channel": "email", "status": "none", "type": "consent"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.email_consent IS NULL
