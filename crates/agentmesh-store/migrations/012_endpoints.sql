-- Every endpoint a peer's card lists, in its order of preference (JSON array of strings), so that
-- each carrier finds the ones it can use; `endpoint` stays the one the HTTP carrier reaches.
ALTER TABLE peers ADD COLUMN endpoints TEXT NOT NULL DEFAULT '[]';
UPDATE peers SET endpoints = CASE
    WHEN json_valid(card) AND json_type(card, '$.endpoints') = 'array' THEN json_extract(card, '$.endpoints')
    ELSE json_array(endpoint)
END;
