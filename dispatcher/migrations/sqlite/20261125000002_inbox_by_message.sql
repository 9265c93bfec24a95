-- Inbox rows by message: a redelivered duplicate is routed again with the seqs it was given.
CREATE INDEX inbox_message ON inbox (message);
