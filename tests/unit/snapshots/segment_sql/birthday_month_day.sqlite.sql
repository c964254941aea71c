-- {"day": 24, "month": 12, "type": "birthday"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.birthday IS NOT NULL AND strftime(?, customers.birthday) = ?
