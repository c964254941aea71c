-- {"type": "birthday", "within_next_days": 3}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.birthday IS NOT NULL AND strftime(?, customers.birthday) IN (__[POSTCOMPILE_strftime_2])
