-- {"count": {"op": "eq", "value": 0}, "event": "Product Added to Wishlist", "type": "event"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND NOT (EXISTS (SELECT * 
FROM events 
WHERE events.customer_id = customers.id AND events.event = ?))
