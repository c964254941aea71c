-- {"field": "average_order_value", "op": "neq", "type": "attribute", "value": 50}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND NOT (customers.average_order_value IS NOT NULL AND customers.average_order_value IN (?))
