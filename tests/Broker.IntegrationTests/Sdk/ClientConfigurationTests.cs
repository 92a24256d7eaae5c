using Broker.Client;
using Microsoft.Extensions.Configuration;

namespace Broker.IntegrationTests.Sdk;

/// <summary>Settings from code, IConfiguration and the QUEUE_PLATFORM_* environment, in that order; clear errors.</summary>
public sealed class ClientConfigurationTests
{
    private static Dictionary<string, string?> Environment(params (string Name, string Value)[] variables) =>
        variables.ToDictionary(v => v.Name, v => (string?)v.Value);

    [Fact]
    public void The_environment_alone_configures_a_consumer_like_estelas_adapter()
    {
        var env = Environment(("QUEUE_PLATFORM_LISTENERS", "10.0.0.5, broker-b:7200,,"), ("QUEUE_PLATFORM_PORT", "7300"),
            ("QUEUE_PLATFORM_TOPIC", "job_items"), ("QUEUE_PLATFORM_MAX_TIMEOUT", "90"), ("QUEUE_PLATFORM_STRICT", "true"),
            ("QUEUE_PLATFORM_SOMETHING_ELSE", "ignored"), ("QUEUE_PLATFORM", "broker"));

        var settings = BrokerSettings.Resolve(null, env);

        Assert.Equal(["http://10.0.0.5:7300/", "http://broker-b:7200/"], settings.Listeners.Select(u => u.ToString()));
        Assert.Equal("job_items", settings.RequiredTopic);
        Assert.Equal("group_job_items", settings.EffectiveGroup);
        Assert.Equal(BrokerStart.Earliest, settings.Start);
        Assert.Equal(TimeSpan.FromSeconds(90), settings.MaxTimeout);
        Assert.True(settings.Strict);
    }

    [Fact]
    public void Options_set_in_code_override_the_environment()
    {
        var env = Environment(("QUEUE_PLATFORM_LISTENERS", "env-host"), ("QUEUE_PLATFORM_TOPIC", "env-topic"),
            ("QUEUE_PLATFORM_GROUP", "env-group"), ("QUEUE_PLATFORM_LINGER", "0.5"), ("QUEUE_PLATFORM_START", "earliest"));
        var options = new BrokerClientOptions { Listeners = "code-host:7400", Group = "code-group", Start = BrokerStart.Latest };

        var settings = BrokerSettings.Resolve(options, env);

        Assert.Equal("http://code-host:7400/", Assert.Single(settings.Listeners).ToString());
        Assert.Equal("env-topic", settings.RequiredTopic);
        Assert.Equal("code-group", settings.EffectiveGroup);
        Assert.Equal(BrokerStart.Latest, settings.Start);
        Assert.Equal(TimeSpan.FromMilliseconds(500), settings.Linger);
    }

    [Fact]
    public void Options_bind_from_an_appsettings_section()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Broker:Listeners"] = "a:7101,b:7102",
            ["Broker:Topic"] = "items",
            ["Broker:MaxTimeout"] = "00:02:00",
            ["Broker:MaxInFlight"] = "32",
            ["Broker:Start"] = "Latest",
        }).Build();
        var options = new BrokerClientOptions();
        configuration.GetSection("Broker").Bind(options);

        var settings = BrokerSettings.Resolve(options, Environment(("QUEUE_PLATFORM_TOPIC", "from-env")));

        Assert.Equal(2, settings.Listeners.Count);
        Assert.Equal("items", settings.RequiredTopic);
        Assert.Equal(TimeSpan.FromMinutes(2), settings.MaxTimeout);
        Assert.Equal(32, settings.MaxInFlight);
        Assert.Equal(BrokerStart.Latest, settings.Start);
    }

    [Fact]
    public void A_missing_listener_list_is_one_error_naming_its_variable()
    {
        var error = Assert.Throws<BrokerConfigurationException>(() => BrokerSettings.Resolve(null, Environment(("QUEUE_PLATFORM_TOPIC", "t"))));
        Assert.Equal("QUEUE_PLATFORM_LISTENERS", error.Setting);
        Assert.Contains("QUEUE_PLATFORM_LISTENERS", error.Message);

        var blank = Assert.Throws<BrokerConfigurationException>(() => BrokerSettings.Resolve(null, Environment(("QUEUE_PLATFORM_LISTENERS", " , "))));
        Assert.Equal("QUEUE_PLATFORM_LISTENERS", blank.Setting);
    }

    [Fact]
    public void A_consumer_without_a_topic_is_an_error_naming_QUEUE_PLATFORM_TOPIC()
    {
        var settings = BrokerSettings.Resolve(null, Environment(("QUEUE_PLATFORM_LISTENERS", "h")));
        var error = Assert.Throws<BrokerConfigurationException>(() => settings.RequiredTopic);
        Assert.Equal("QUEUE_PLATFORM_TOPIC", error.Setting);
    }

    [Theory]
    [InlineData("QUEUE_PLATFORM_PORT", "seventy")]
    [InlineData("QUEUE_PLATFORM_PORT", "70000")]
    [InlineData("QUEUE_PLATFORM_MAX_TIMEOUT", "soon")]
    [InlineData("QUEUE_PLATFORM_MAX_TIMEOUT", "0")]
    [InlineData("QUEUE_PLATFORM_STRICT", "maybe")]
    [InlineData("QUEUE_PLATFORM_START", "middle")]
    [InlineData("QUEUE_PLATFORM_MAX_BATCH_MESSAGES", "0")]
    public void An_unreadable_value_is_an_error_naming_its_variable(string variable, string value)
    {
        var env = Environment(("QUEUE_PLATFORM_LISTENERS", "h"), (variable, value));
        var error = Assert.Throws<BrokerConfigurationException>(() => BrokerSettings.Resolve(null, env));
        Assert.Equal(variable, error.Setting);
        Assert.Contains(value, error.Message);
    }
}
