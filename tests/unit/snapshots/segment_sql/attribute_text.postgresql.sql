-- {"field": "email", "op": "contains", "type": "attribute", "value": "@example.com"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.email IS NOT NULL AND strpos(lower(customers.email), %(strpos_1)s::VARCHAR) > %(strpos_2)s::INTEGER
