using Broker.Storage.Telemetry;
using Broker.Storage.Topics;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace Broker.Server.Hosting;

/// <summary>
/// What an operator watches, wired in the host only (storage publishes meters and knows no exporter):
/// OpenTelemetry metrics (the storage's meters, ASP.NET Core's and Kestrel's, .NET runtime and process) exported for
/// Prometheus at <c>/metrics</c>; ASP.NET Core health checks at <c>/healthz</c> and as the standard gRPC health
/// service; gRPC server reflection (grpcurl and friends need no .proto). The HTTP paths are served on the HTTP/1.1
/// listener (<see cref="BrokerOptions.HttpPort"/>).
/// </summary>
internal static class Observability
{
    public const string MetricsPath = "/metrics";
    public const string HealthPath = "/healthz";

    public static void AddBrokerObservability(this IServiceCollection services, BrokerOptions options)
    {
        services.AddSingleton(provider => new StorageMetrics(provider.GetRequiredService<TopicStore>()));
        var telemetry = services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(StorageInstruments.MeterName, StorageInstruments.MeterName + ".*", "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel")
            .AddRuntimeInstrumentation()
            .AddProcessInstrumentation()
            .AddPrometheusExporter());
        // Off by default: without a listener the broker's spans are never created (BrokerTracing).
        if (options.OtlpEndpoint.Length > 0)
        {
            telemetry.WithTracing(tracing => tracing
                .AddSource(BrokerTracing.SourceName)
                .AddOtlpExporter(otlp => otlp.Endpoint = new Uri(options.OtlpEndpoint)));
        }
        // Checked on each request (no cached result): a probe sees a failed topic or the drain at once. Without the
        // cache the periodic publisher that fills it only costs a run every 30 s and an error-level line per unhealthy
        // run (during every shutdown, for one), so it goes.
        services.AddGrpcHealthChecks(grpc => grpc.UseHealthChecksCache = false).AddCheck<StorageHealthCheck>("storage");
        services.RemoveAll<IHealthCheckPublisher>();
        services.AddGrpcReflection();
    }

    public static void MapBrokerObservability(this WebApplication app)
    {
        // Instruments exist once resolved: before the first scrape, not at the first scrape's cost.
        app.Services.GetRequiredService<StorageMetrics>();
        app.MapPrometheusScrapingEndpoint(MetricsPath);
        app.MapHealthChecks(HealthPath, new Microsoft.AspNetCore.Diagnostics.HealthChecks.HealthCheckOptions { ResponseWriter = WriteHealthAsync });
        app.MapGrpcHealthChecksService();
        app.MapGrpcReflectionService();
    }

    /// <summary>
    /// "Healthy", or the status with why ("Unhealthy: storage failed in 1 topic(s): items"): a probe's log then says
    /// which topic broke, where the default writer gives the status word only.
    /// </summary>
    private static Task WriteHealthAsync(HttpContext context, HealthReport report)
    {
        context.Response.ContentType = "text/plain; charset=utf-8";
        var reasons = report.Entries.Values.Where(entry => entry.Status != HealthStatus.Healthy).Select(entry => entry.Description).OfType<string>().ToList();
        return context.Response.WriteAsync(reasons.Count == 0 ? report.Status.ToString() : $"{report.Status}: {string.Join("; ", reasons)}");
    }
}
