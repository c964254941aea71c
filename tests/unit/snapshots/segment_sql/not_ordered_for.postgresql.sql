-- {"days": 90, "type": "not_ordered_for"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND customers.last_order_at IS NOT NULL AND customers.last_order_at < %(last_order_at_1)s::TIMESTAMP WITH TIME ZONE
