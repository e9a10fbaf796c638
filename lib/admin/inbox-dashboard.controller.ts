import { Controller, Get, Header, Req, type Type } from '@nestjs/common';
import { CONTENT_SECURITY_POLICY, dashboardAsset, dashboardPage } from './dashboard-assets';
import { excludeFromApi } from './openapi';

/**
 * The console's page and its two files. They hold no data (everything comes through the guarded
 * API), so they are served to anyone who can reach the path: a page whose API answers 403 asks
 * for a token, which suits header-token guards as well as session cookies.
 */
export function dashboardController(path: string): Type<unknown> {
  @Controller(path)
  class InboxDashboardController {
    @Get()
    @Header('content-type', 'text/html; charset=utf-8')
    @Header('content-security-policy', CONTENT_SECURITY_POLICY)
    @Header('cache-control', 'no-store')
    page(@Req() request: { originalUrl?: string; url: string }): string {
      return dashboardPage(request.originalUrl ?? request.url);
    }

    @Get('assets/dashboard.js')
    @Header('content-type', 'text/javascript; charset=utf-8')
    @Header('x-content-type-options', 'nosniff')
    script(): string {
      return dashboardAsset('dashboard.js');
    }

    @Get('assets/dashboard.css')
    @Header('content-type', 'text/css; charset=utf-8')
    @Header('x-content-type-options', 'nosniff')
    styles(): string {
      return dashboardAsset('dashboard.css');
    }
  }
  excludeFromApi(InboxDashboardController);
  return InboxDashboardController;
}
