-- {"type": "birthday", "within_next_days": 3}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.birthday IS NOT NULL AND to_char(customers.birthday, %(to_char_1)s::VARCHAR) IN (__[POSTCOMPILE_to_char_2])
