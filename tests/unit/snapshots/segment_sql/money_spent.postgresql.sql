-- {"compare": {"op": "gte", "value": 500}, "type": "money_spent"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.total_spent >= %(param_1)s
