using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Broker.Client;

/// <summary>Registers hosted worker pools.</summary>
public static class BrokerWorkerServiceCollectionExtensions
{
    /// <summary>
    /// A hosted <see cref="BrokerWorkerPool{THandler}"/> running <typeparamref name="THandler"/> (registered scoped unless
    /// it already is) for each message; <paramref name="configure"/> sets its options.
    /// </summary>
    public static IServiceCollection AddBrokerWorker<THandler>(this IServiceCollection services, Action<BrokerWorkerOptions>? configure = null)
        where THandler : class, IBrokerMessageHandler
    {
        string name = OptionsName<THandler>();
        var options = services.AddOptions<BrokerWorkerOptions>(name);
        if (configure is not null)
            options.Configure(configure);
        services.TryAddScoped<THandler>();
        services.TryAddSingleton(provider => new BrokerWorkerPool<THandler>(
            provider.GetRequiredService<IOptionsMonitor<BrokerWorkerOptions>>().Get(name),
            provider.GetRequiredService<IServiceScopeFactory>(),
            provider.GetService<ILoggerFactory>()));
        services.AddSingleton<IHostedService>(provider => provider.GetRequiredService<BrokerWorkerPool<THandler>>());
        return services;
    }

    /// <summary>
    /// As <see cref="AddBrokerWorker{THandler}(IServiceCollection, Action{BrokerWorkerOptions})"/>, with the options bound
    /// from <paramref name="section"/> (for example <c>Listeners</c>, <c>Topic</c>, <c>MaxTimeout</c>, <c>MinHandlers</c>,
    /// <c>MaxHandlers</c>, <c>BacklogPerHandler</c> side by side), then <paramref name="configure"/>.
    /// </summary>
    public static IServiceCollection AddBrokerWorker<THandler>(this IServiceCollection services, IConfiguration section,
        Action<BrokerWorkerOptions>? configure = null)
        where THandler : class, IBrokerMessageHandler =>
        services.AddBrokerWorker<THandler>(options =>
        {
            section.Bind(options);
            section.Bind(options.Client);
            configure?.Invoke(options);
        });

    private static string OptionsName<THandler>() => "Broker.Client.Worker:" + typeof(THandler).FullName;
}
