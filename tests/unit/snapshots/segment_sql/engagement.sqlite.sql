-- {"action": "clicked", "channel": "email", "flow_id": "welcome", "period": {"amount": 30, "type": "last", "unit": "days"}, "type": "engagement"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM events 
WHERE events.customer_id = customers.id AND events.event = ? AND events.timestamp >= ? AND events.timestamp < ? AND coalesce(json_type(events.properties, ?), ?) = ? AND json_extract(events.properties, ?) IN (__[POSTCOMPILE_json_extract_1]) AND coalesce(json_type(events.properties, ?), ?) = ? AND json_extract(events.properties, ?) IN (__[POSTCOMPILE_json_extract_2])))
