-- {"field": "email", "op": "contains", "type": "attribute", "value": "@example.com"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.email IS NOT NULL AND instr(lower(customers.email), ?) > ?
