-- {"min_value": 50, "period": {"type": "this_week"}, "type": "abandoned_checkout"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM checkouts 
WHERE checkouts.customer_id = customers.id AND checkouts.kind = %(kind_1)s::VARCHAR AND checkouts.abandoned_at IS NOT NULL AND checkouts.abandoned_at >= %(abandoned_at_1)s::TIMESTAMP WITH TIME ZONE AND checkouts.abandoned_at < %(abandoned_at_2)s::TIMESTAMP WITH TIME ZONE AND checkouts.value >= %(value_1)s))
