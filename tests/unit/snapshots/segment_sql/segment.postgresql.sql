-- {"segment_id": 7, "type": "segment"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM segment_memberships 
WHERE segment_memberships.segment_id = %(segment_id_1)s::BIGINT AND segment_memberships.customer_id = customers.id))
