-- Where an incoming contact request came from: the sender's address and its network (/24 for
-- IPv4, /48 for IPv6), so that one network cannot fill the pending table and the owner can
-- reject a flood by address.
ALTER TABLE contact_requests ADD COLUMN source_ip TEXT;
ALTER TABLE contact_requests ADD COLUMN source_net TEXT;
CREATE INDEX contact_requests_source_net ON contact_requests (source_net) WHERE status = 'pending';
