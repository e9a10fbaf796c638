import { Module } from '@nestjs/common';
import { InboxAdminModule } from 'nestjs-inbox';
import { DemoTokenGuard } from './demo-token.guard';

/** The operator's console at /inbox-admin/, behind the demo token. */
@Module({
  imports: [
    InboxAdminModule.register({
      path: 'inbox-admin',
      guards: [DemoTokenGuard],
      actor: (request) => String(request.headers['x-operator'] ?? 'console (demo token)'),
    }),
  ],
  providers: [DemoTokenGuard],
})
export class ConsoleModule {}
