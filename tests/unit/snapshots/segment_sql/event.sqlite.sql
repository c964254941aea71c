-- {"count": {"op": "gte", "value": 2}, "event": "Product Viewed", "period": {"amount": 7, "type": "last"}, "type": "event", "where": [{"op": "eq", "property": "product_id", "value": "p1"}]}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (SELECT count(*) AS count_1 
FROM events 
WHERE events.customer_id = customers.id AND events.event = ? AND events.timestamp >= ? AND events.timestamp < ? AND coalesce(json_type(events.properties, ?), ?) = ? AND json_extract(events.properties, ?) IN (__[POSTCOMPILE_json_extract_1])) >= ?
