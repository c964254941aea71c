-- {"type": "unsubscribed"}
SELECT customers.id 
FROM customers 
WHERE customers.merged_into_id IS NULL AND customers.erased_at IS NULL AND (customers.email_consent IS NOT NULL AND customers.email_consent = %(email_consent_1)s::VARCHAR OR customers.sms_consent IS NOT NULL AND customers.sms_consent = %(sms_consent_1)s::VARCHAR OR customers.push_consent IS NOT NULL AND customers.push_consent = %(push_consent_1)s::VARCHAR)
