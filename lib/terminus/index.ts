// nestjs-inbox/terminus: the inbox's health indicator for @nestjs/terminus (an optional peer).
export { InboxHealthIndicator } from './inbox-health.indicator';
export type { InboxHealthReport, InboxHealthThresholds } from '../health/inbox-health';
