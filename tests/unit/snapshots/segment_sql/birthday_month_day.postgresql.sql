-- {"day": 24, "month": 12, "type": "birthday"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.birthday IS NOT NULL AND to_char(customers.birthday, %(to_char_1)s::VARCHAR) = %(to_char_2)s::VARCHAR
