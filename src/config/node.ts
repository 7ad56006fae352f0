import { hostname } from 'node:os';

/** This node's name in claims, leases, logs, metrics and the queue: [server] node_id, else the host name. */
export const nodeName = (cfg: { server: { node_id: string } }): string => cfg.server.node_id || hostname();
