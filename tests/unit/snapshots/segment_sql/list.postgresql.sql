-- {"list_id": 3, "type": "list"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM list_memberships 
WHERE list_memberships.list_id = %(list_id_1)s::BIGINT AND list_memberships.customer_id = customers.id))
