-- {"present": false, "tag": "vip", "type": "tag"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND NOT (EXISTS (SELECT * 
FROM json_each(customers.tags) AS anon_1 
WHERE anon_1.type = ? AND anon_1.value = ?))
