-- {"type": "unsubscribed"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (customers.email_consent IS NOT NULL AND customers.email_consent = ? OR customers.sms_consent IS NOT NULL AND customers.sms_consent = ? OR customers.push_consent IS NOT NULL AND customers.push_consent = ?)
