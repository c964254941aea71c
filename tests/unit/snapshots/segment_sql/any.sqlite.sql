-- {"rules": [{"tag": "vip", "type": "tag"}, {"channel": "phone", "type": "has_contact"}], "type": "any"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND ((EXISTS (SELECT * 
FROM json_each(customers.tags) AS anon_1 
WHERE anon_1.type = ? AND anon_1.value = ?)) OR customers.phone IS NOT NULL)
