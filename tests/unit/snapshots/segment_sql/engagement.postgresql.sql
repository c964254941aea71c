-- {"action": "clicked", "channel": "email", "flow_id": "welcome", "period": {"amount": 30, "type": "last", "unit": "days"}, "type": "engagement"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (EXISTS (SELECT * 
FROM events 
WHERE events.customer_id = customers.id AND events.event = %(event_1)s::VARCHAR AND events.timestamp >= %(timestamp_1)s::TIMESTAMP WITH TIME ZONE AND events.timestamp < %(timestamp_2)s::TIMESTAMP WITH TIME ZONE AND coalesce(jsonb_typeof(events.properties -> %(param_1)s::VARCHAR), %(coalesce_1)s::VARCHAR) = %(coalesce_2)s::VARCHAR AND (events.properties ->> %(param_2)s::VARCHAR) IN (__[POSTCOMPILE_param_3]) AND coalesce(jsonb_typeof(events.properties -> %(param_4)s::VARCHAR), %(coalesce_3)s::VARCHAR) = %(coalesce_4)s::VARCHAR AND (events.properties ->> %(param_5)s::VARCHAR) IN (__[POSTCOMPILE_param_6])))
