-- {"period": {"date": "2026-02-14", "type": "on"}, "placed": false, "type": "placed_order"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND NOT (EXISTS (SELECT * 
FROM orders 
WHERE orders.customer_id = customers.id AND orders.status != %(status_1)s::VARCHAR AND orders.placed_at >= %(placed_at_1)s::TIMESTAMP WITH TIME ZONE AND orders.placed_at < %(placed_at_2)s::TIMESTAMP WITH TIME ZONE))
