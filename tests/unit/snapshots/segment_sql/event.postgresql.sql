-- {"count": {"op": "gte", "value": 2}, "event": "Product Viewed", "period": {"amount": 7, "type": "last"}, "type": "event", "where": [{"op": "eq", "property": "product_id", "value": "p1"}]}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (SELECT count(*) AS count_1 
FROM events 
WHERE events.customer_id = customers.id AND events.event = %(event_1)s::VARCHAR AND events.timestamp >= %(timestamp_1)s::TIMESTAMP WITH TIME ZONE AND events.timestamp < %(timestamp_2)s::TIMESTAMP WITH TIME ZONE AND coalesce(jsonb_typeof(events.properties -> %(param_1)s::VARCHAR), %(coalesce_1)s::VARCHAR) = %(coalesce_2)s::VARCHAR AND (events.properties ->> %(param_2)s::VARCHAR) IN (__[POSTCOMPILE_param_3])) >= %(param_4)s::INTEGER
