-- {"min_value": 50, "period": {"type": "this_week"}, "type": "abandoned_checkout"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM checkouts 
WHERE checkouts.customer_id = customers.id AND checkouts.kind = ? AND checkouts.abandoned_at IS NOT NULL AND checkouts.abandoned_at >= ? AND checkouts.abandoned_at < ? AND checkouts.value >= ?))
