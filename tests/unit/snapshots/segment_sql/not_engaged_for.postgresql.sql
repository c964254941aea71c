-- {"days": 90, "type": "not_engaged_for"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND NOT (EXISTS (SELECT * 
FROM events 
WHERE events.customer_id = customers.id AND events.event IN (__[POSTCOMPILE_event_1]) AND events.timestamp >= %(timestamp_1)s::TIMESTAMP WITH TIME ZONE))
