-- Where an incoming contact request came from: the sender's address and its network (/24 for
-- IPv4, /48 for IPv6), so that one network cannot fill the pending table and the owner can
-- reject a flood by address.
ALTER TABLE contact_requests ADD COLUMN source_ip TEXT;
ALTER TABLE contact_requests ADD COLUMN source_net TEXT;
CREATE INDEX contact_requests_source_net ON contact_requests (source_net) WHERE status = 'pending';

-- Peers our owner's discovery found (a scan, the LAN) before they wrote to us: their contact
-- requests may use the share of pending requests kept from strangers. A row a peer's own request
-- created never gets it, whatever state the peer later moves it back to.
ALTER TABLE peers ADD COLUMN found_by_owner INTEGER NOT NULL DEFAULT 0;

-- Delivery attempts a peer refused because our clock was off (`stale_timestamp`): they drive
-- the backoff like any attempt but do not count towards `max_attempts`.
ALTER TABLE outbox ADD COLUMN clock_refusals INTEGER NOT NULL DEFAULT 0;
